#!/usr/bin/env bash
# Make the spoken-digit recordings that AV-digits (src/avfusion/demo/avdigits.py) mixes into its
# clips. Run once, as root, on Debian 12 (bookworm); the FLAC files it writes are committed, so
# the demo itself never needs apt or the network.
#
#   sudo scripts/make_digit_recordings.sh            # writes src/avfusion/demo/assets/digits/
#   scripts/make_digit_recordings.sh --no-apt OUT    # packages already installed; other folder
#
# Voices (folder names under assets/digits/):
#   espeak-*   espeak-ng 1.51 (formant synthesis), several accents and +variant voices, each at
#              its own speed and pitch
#   flite-*    CMU Flite 2.2 built-in voices kal, kal16, awb, rms, slt (awb_time is a
#              limited-domain clock voice and is skipped)
#   allison    Allison Smith's recordings from Asterisk's core sounds (digits/0.wav..9.wav,
#              8 kHz), CC-BY-SA-3.0, see ATTRIBUTION.md
# Each word is trimmed of leading and trailing silence (sox `silence`, 1% threshold), resampled to
# 16 kHz mono 16-bit without dither (-D, so reruns give the same samples), normalised to -1 dBFS
# peak and written as FLAC (compression level 8).
set -euo pipefail

APT=1
if [[ "${1:-}" == "--no-apt" ]]; then APT=0; shift; fi
HERE="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$HERE/src/avfusion/demo/assets/digits}"

if [[ $APT == 1 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends espeak-ng flite asterisk-core-sounds-en-wav sox
fi
for tool in espeak-ng flite sox; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run without --no-apt, as root)" >&2; exit 1; }
done
ALLISON=/usr/share/asterisk/sounds/en/digits
[[ -f $ALLISON/0.wav ]] || { echo "missing $ALLISON (package asterisk-core-sounds-en-wav)" >&2; exit 1; }

WORDS=(zero one two three four five six seven eight nine)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# raw wav -> trimmed 16 kHz mono FLAC
finish() {  # finish IN OUT
  sox -D -R "$1" -c 1 -b 16 -C 8 "$2" \
    remix - silence 1 0.01 1% reverse silence 1 0.01 1% reverse rate 16000 norm -1
}

# espeak-ng: "name|voice|speed (wpm)|pitch (0-99)"
ESPEAK=(
  "espeak-en-us|en-us|160|50"
  "espeak-en-gb|en-gb|150|45"
  "espeak-en-gb-scotland|en-gb-scotland|165|40"
  "espeak-en-rp-f3|en-gb-x-rp+f3|155|60"
  "espeak-en-us-f2|en-us+f2|170|65"
  "espeak-en-029-m3|en-029+m3|145|35"
  "espeak-en-us-klatt|en-us+klatt|160|50"
  "espeak-en-nyc-f4|en-us-nyc+f4|175|55"
  "espeak-en-lancaster-m2|en-gb-x-gbclan+m2|150|30"
  "espeak-en-midlands-f5|en-gb-x-gbcwmd+f5|165|70"
)
FLITE=(kal kal16 awb rms slt)

rm -rf "$OUT"/espeak-* "$OUT"/flite-* "$OUT"/allison
for spec in "${ESPEAK[@]}"; do
  IFS='|' read -r name voice speed pitch <<<"$spec"
  mkdir -p "$OUT/$name"
  for d in "${!WORDS[@]}"; do
    espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$TMP/raw.wav" "${WORDS[$d]}"
    finish "$TMP/raw.wav" "$OUT/$name/$d.flac"
  done
done
for voice in "${FLITE[@]}"; do
  mkdir -p "$OUT/flite-$voice"
  for d in "${!WORDS[@]}"; do
    flite -voice "$voice" -t "${WORDS[$d]}" -o "$TMP/raw.wav"
    finish "$TMP/raw.wav" "$OUT/flite-$voice/$d.flac"
  done
done
mkdir -p "$OUT/allison"
for d in "${!WORDS[@]}"; do
  finish "$ALLISON/$d.wav" "$OUT/allison/$d.flac"
done

echo "wrote $(find "$OUT" -name '*.flac' | wc -l) recordings, $(du -sh "$OUT" | cut -f1) in $OUT"
