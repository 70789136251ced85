#!/bin/sh
# Regenerates docs/karman_vorticity.gif and docs/smoke_plume_density.gif with `lawful fluid --animate`
# (about 3 minutes on one CPU core). Each GIF has one colour scale for all its frames (see
# lawful.integrations.fluid_viz); an MP4 beside it in the temporary folder when ffmpeg is installed.
set -e
cd "$(dirname "$0")"
tmp=$(mktemp -d)
lawful fluid --scene karman --n 64 --re 150 --steps 600 --animate --max-frames 80 --frame-every 0 --out "$tmp/karman"
lawful fluid --scene smoke_plume --n 64 --steps 500 --animate --max-frames 80 --frame-every 0 --out "$tmp/smoke"
cp "$tmp/karman/vorticity.gif" karman_vorticity.gif
cp "$tmp/smoke/density.gif" smoke_plume_density.gif
rm -rf "$tmp"
