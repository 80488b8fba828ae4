#!/usr/bin/env bash
# How long the first commands of the docs take on this machine: every model's quick preset (`python train.py --model X`
# on the built-in data) and `stylize` with its defaults. Prints a Markdown table for docs/performance.md, with the
# machine's cores and its load average before and after, so that a figure taken on a busy machine shows as such.
#
#   bash scripts/durations.sh                          # all models, then stylize
#   MODELS="pix2pix cyclegan" STYLIZE=0 bash scripts/durations.sh
#   CONTENT=photo.jpg STYLE=painting.jpg bash scripts/durations.sh   # stylize's images (default: ../shared/data)
#
# Run it from the repository root on an otherwise idle machine; each run trains in a temporary folder.
set -euo pipefail
MODELS=${MODELS:-"pix2pix cyclegan cut mixgan tpfr adain fast_style"}
STYLIZE=${STYLIZE:-1}
CONTENT=${CONTENT:-../shared/data/styles/content/$(ls ../shared/data/styles/content 2>/dev/null | head -1)}
STYLE=${STYLE:-../shared/data/styles/style/$(ls ../shared/data/styles/style 2>/dev/null | head -1)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
seconds() {  # seconds COMMAND...: runs it, output to $work/log, prints the wall-clock seconds
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/log" 2>&1 || { echo "failed: $*" >&2; tail -5 "$work/log" >&2; echo "failed"; return; }
  end=$(date +%s.%N)
  python -c "print(f'{$end - $start:.0f}')"
}

echo "machine: $(nproc) cores, $(python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'); load average before: $(load)"
echo
echo "| command | steps | seconds | minutes |"
echo "| --- | --- | --- | --- |"
for model in $MODELS; do
  s=$(seconds python train.py --model "$model" --name "dur_$model" --checkpoints_dir "$work")
  steps=$(grep -o 'done: [0-9]* steps' "$work/log" | grep -o '[0-9]*' || echo "?")
  [ "$s" = failed ] && m="" || m=$(python -c "print(f'{$s / 60:.1f}')")
  echo "| \`python train.py --model $model\` | $steps | $s | $m |"
done
if [ "$STYLIZE" != 0 ]; then
  s=$(seconds python -m gan_translate stylize --content "$CONTENT" --style "$STYLE" --out "$work/stylized.png")
  steps=$(python -c "from gan_translate.stylize import StylizeSettings as S; print(S().steps, 'at', S().image_size, 'px')")
  [ "$s" = failed ] && m="" || m=$(python -c "print(f'{$s / 60:.1f}')")
  echo "| \`python -m gan_translate stylize --content C --style S --out O.png\` | $steps | $s | $m |"
fi
echo
echo "load average after: $(load)"
