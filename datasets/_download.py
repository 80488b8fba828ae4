"""Download and safe extraction shared by the data set scripts (standard library + tqdm only).

A data set lands in ``<dest>/<name>/`` whole or not at all: the archive is downloaded to a temporary folder beside the
target, extracted there, and renamed into place; any failure removes the temporary folder.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlparse

from tqdm import tqdm

EXIT_USER_ERROR = 2
TIMEOUT_S = 30  # per socket operation; a stalled server fails instead of hanging forever
CHUNK = 1 << 16


class DownloadError(Exception):
    """A download or an archive failed; the message is one line for the user."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the destination (absolute path, '..', link or device)."""


# ---------------------------------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _network_error(url: str, err: BaseException) -> DownloadError:
    return DownloadError(f"could not download {url}: {_reason(err)} (are you online?)")


def download(url: str, dest: Path) -> None:
    """Downloads ``url`` to the file ``dest`` with a progress bar, through a temporary file renamed at the end."""
    fd, part_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            # network errors (URLError is an OSError) are told apart from errors writing the file, which stay OSError
            try:
                response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
            except (OSError, http.client.HTTPException) as err:
                raise _network_error(url, err) from None
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
                    while True:
                        try:
                            chunk = response.read(CHUNK)
                        except (OSError, http.client.HTTPException) as err:
                            raise _network_error(url, err) from None
                        if not chunk:
                            break
                        out.write(chunk)
                        bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"could not download {url}: the connection closed early (are you online?)")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------------------------------


def check_member_name(name: str, archive: Path) -> None:
    """Refuses a member name that is absolute or climbs out of the destination with '..'."""
    posix = name.replace("\\", "/")
    windows = PureWindowsPath(name)
    if posix.startswith("/") or windows.drive or windows.root or ".." in PurePosixPath(posix).parts:
        raise UnsafeArchiveError(f"refusing to extract {archive.name}: unsafe member path {name!r}")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extracts a .zip or .tar(.gz) into ``dest`` after checking every member; nothing is written on refusal."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                check_member_name(name, archive)
            dest.mkdir(parents=True, exist_ok=True)
            zf.extractall(dest)
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                check_member_name(member.name, archive)
                if not (member.isfile() or member.isdir()):  # links and devices could point anywhere
                    raise UnsafeArchiveError(f"refusing to extract {archive.name}: {member.name!r} is not a plain file")
            dest.mkdir(parents=True, exist_ok=True)
            # the stdlib's own guard (Python >= 3.11.4) as a second line behind the checks above
            guard = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest, members=members, **guard)
    except tarfile.ReadError:
        raise DownloadError(f"{archive.name} is not a zip or tar archive (was the download corrupted?)") from None


def _first_missing(folder: Path) -> Path | None:
    """The outermost ancestor of ``folder`` (or itself) that does not exist yet, if any."""
    if folder.exists():
        return None
    folder = folder.absolute()
    while not folder.parent.exists():
        folder = folder.parent
    return folder


def fetch_dataset(name: str, url: str, dest_root: Path) -> Path:
    """Downloads and extracts one data set into ``dest_root/name``; an existing non-empty folder is kept as is."""
    target = dest_root / name
    if target.is_dir() and any(target.iterdir()):
        print(f"{target} already exists; delete it to download again", file=sys.stderr)
        return target
    created = _first_missing(dest_root)
    dest_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest_root))
    done = False
    try:
        archive = work / (PurePosixPath(urlparse(url).path).name or f"{name}.archive")
        download(url, archive)
        extracted = work / "extracted"
        safe_extract(archive, extracted)
        archive.unlink()
        # the archives hold one top folder named like the data set; take its content, not an extra level
        entries = list(extracted.iterdir())
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
        if target.is_dir():
            target.rmdir()  # empty, checked above
        os.rename(source, target)
        done = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created is not None and not done:
            shutil.rmtree(created, ignore_errors=True)  # folders made only for this failed download
    return target


# ---------------------------------------------------------------------------------------------------------------------
# command line shared by the download scripts
# ---------------------------------------------------------------------------------------------------------------------


def run_download_cli(
    argv: Sequence[str] | None,
    *,
    description: str,
    names: Sequence[str],
    url_template: str,
    notes: dict[str, str],
    default_dest: Path,
) -> int:
    """Parses ``NAME [--dest DIR]``, fetches the data set and returns the exit code (2 for any user-facing failure).

    ``notes`` maps a name to a message printed instead of downloading (a set that cannot be served from the host).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("name", help="data set: " + ", ".join(names))
    parser.add_argument("--dest", type=Path, default=default_dest, help=f"parent folder (default: {default_dest})")
    args = parser.parse_args(argv)
    if args.name not in names:
        print(f"error: unknown data set {args.name!r}; valid names: {', '.join(names)}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.name in notes:
        print(f"error: {notes[args.name]}", file=sys.stderr)
        return EXIT_USER_ERROR
    url = url_template.format(name=args.name)
    try:
        target = fetch_dataset(args.name, url, args.dest)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # the destination, not the network: unwritable folder, full disk
        print(f"error: cannot write under {args.dest}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was kept", file=sys.stderr)
        return 130
    print(f"{args.name} is in {target}")
    return 0
