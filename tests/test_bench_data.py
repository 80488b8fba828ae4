"""bench --data: the loader measurement on a drawn folder and on its shards, and option errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("webdataset")

from gan_translate.bench import bench_command  # noqa: E402
from gan_translate.bench_data import draw_folder, make_shards, measure  # noqa: E402
from gan_translate.errors import UserError  # noqa: E402


def test_measure_loose_and_sharded(tmp_path: Path) -> None:
    folder = draw_folder(tmp_path / "jpg", 12, size=40, ext="jpg", distinct=4)
    assert len(list(folder.rglob("*.jpg"))) == 12 and (folder / "0000" / "0000011.jpg").stat().st_nlink == 3
    assert make_shards(folder, tmp_path / "shards", per_shard=5) > 0
    assert len(list((tmp_path / "shards").glob("images-*.tar"))) == 3
    for root in (folder, tmp_path / "shards"):
        result = measure({"dataroot": str(root), "size": 32, "load_size": 36, "batch_size": 2, "workers": 0,
                          "images": 6})
        assert result["items"] == 12 and result["images_per_s"] > 0 and result["peak_rss_main_mb"] > 10


def test_bad_options() -> None:
    with pytest.raises(UserError, match="--data_sizes takes comma-separated integers"):
        bench_command(["--data", "--data_sizes", "10k"])
