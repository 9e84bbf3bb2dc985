#!/usr/bin/env bash
# Mutation testing with cosmic-ray over the modules where a wrong line gives a wrong answer
# (docs/testing.md). Not part of CI: run before a release, and after changing one of these
# modules or its tests. Each module is mutated one change at a time and its own fast test
# selection is run against every mutant; a mutant the tests do not notice "survives".
#
#   scripts/mutation.sh                  # every module below (hours on 2 cores)
#   scripts/mutation.sh atomic measure   # some of them (keys: scripts/mutation.sh --list)
#
# Works on a copy of the working tree (cosmic-ray edits the files it mutates in place:
# never in a checkout others work in); the copy's src/ comes first on PYTHONPATH. Results:
# $OUT/<key>.sqlite (the session: resumable, `cosmic-ray exec` again), <key>.txt
# (cr-report: every surviving mutant), and summary.tsv (key, mutants, killed, survived,
# score). Needs the `mutation` extra: pip install -e '.[testing,mutation]'.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
OUT="${OUT:-$ROOT/artifacts/mutation}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
export PYTHONUTF8=1

# key | module (path in the repository) | timeout per mutant (s) | its test selection
MODULES="
atomic|src/napari_nacsim/core/atomic.py|120|tests/test_atomic_failures.py tests/test_atomic_modes.py tests/test_cli_write_failures.py
measure|src/napari_nacsim/science/measure.py|180|tests/test_segmentation_measure.py
card|src/napari_nacsim/science/generative/card.py|300|tests/test_model_card.py tests/test_model_hashes.py
checkpoint|src/napari_nacsim/science/generative/checkpoint.py|300|tests/test_model_hashes.py tests/test_generative_checkpoint.py
outcome|src/napari_nacsim/science/generative/outcome.py|300|tests/test_lung_outcome.py
outcomes|src/napari_nacsim/engine/outcomes.py|300|tests/test_lung_outcome.py
conditioning|src/napari_nacsim/science/generative/conditioning.py|600|tests/test_generative_core.py tests/test_model_behaviour.py -k breast
sampling|src/napari_nacsim/science/generative/sampling.py|600|tests/test_generative_core.py tests/test_model_behaviour.py -k breast
lung_sampling|src/napari_nacsim/science/generative/immunodiff/sampling.py|600|tests/test_immunodiff_parts.py tests/test_model_behaviour.py -k lung
cohort_review|src/napari_nacsim/engine/cohort_review.py|900|tests/test_review_identity.py tests/test_cohort_review.py
family_base|src/napari_nacsim/families/base.py|900|tests/test_families.py tests/test_model_behaviour.py tests/test_review_identity.py
family_breast|src/napari_nacsim/families/breast.py|900|tests/test_families.py tests/test_model_behaviour.py -k breast
family_lung|src/napari_nacsim/families/lung.py|900|tests/test_families.py tests/test_model_behaviour.py -k lung
"

if [ "${1:-}" = "--list" ]; then
  echo "$MODULES" | awk -F'|' 'NF == 4 {printf "%-14s %s\n", $1, $2}'
  exit 0
fi
if [ ! -x "$VENV/bin/cosmic-ray" ]; then
  echo "mutation.sh: cosmic-ray is not installed in $VENV (pip install -e '.[mutation]')" >&2
  exit 2
fi
wanted=("$@")
selected() {
  [ ${#wanted[@]} -eq 0 ] && return 0
  local k
  for k in "${wanted[@]}"; do [ "$k" = "$1" ] && return 0; done
  return 1
}
for k in "${wanted[@]}"; do
  echo "$MODULES" | grep -q "^$k|" || { echo "mutation.sh: unknown module key '$k' (--list)" >&2; exit 2; }
done

mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nacsim-mutation.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# the working tree as it is (tracked and untracked files, not ignored ones)
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
   | tar --null -T - -cf - 2>/dev/null) | tar -C "$WORK" -xf -
cd "$WORK"
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
found="$("$VENV/bin/python" -c 'import napari_nacsim, os; print(os.path.realpath(napari_nacsim.__file__))')"
case "$found" in
  "$WORK"/*) ;;
  *) echo "mutation.sh: napari_nacsim imports from $found, not from the copy" >&2; exit 1 ;;
esac

echo "$MODULES" | while IFS='|' read -r key module timeout tests; do
  [ -n "$key" ] || continue
  selected "$key" || continue
  config="$WORK/mutation-$key.toml"
  session="$OUT/$key.sqlite"
  cat > "$config" <<EOF
[cosmic-ray]
module-path = "$module"
timeout = $timeout.0
excluded-modules = []
test-command = "$VENV/bin/python -m pytest -x -q -p no:cacheprovider -p no:randomly $tests"

[cosmic-ray.distributor]
name = "local"
EOF
  echo "== $key: $module ($tests)"
  started=$(date +%s)
  if [ ! -f "$session" ]; then
    "$VENV/bin/cosmic-ray" init "$config" "$session"
  fi
  if ! "$VENV/bin/cosmic-ray" baseline "$config"; then
    echo "mutation.sh: the tests of $key fail without any mutation: fix them first" >&2
    exit 1
  fi
  "$VENV/bin/cosmic-ray" exec "$config" "$session"
  "$VENV/bin/cr-report" "$session" > "$OUT/$key.txt" || true
  "$VENV/bin/python" - "$session" "$key" "$(( $(date +%s) - started ))" >> "$OUT/summary.tsv" <<'EOF'
import sqlite3, sys
session, key, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
db = sqlite3.connect(session)
rows = db.execute("SELECT test_outcome FROM work_results").fetchall()
total = db.execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
killed = sum(1 for (o,) in rows if o and o.lower().endswith("killed"))
survived = sum(1 for (o,) in rows if o and o.lower().endswith("survived"))
score = 100.0 * killed / (killed + survived) if killed + survived else float("nan")
print(f"{key}\t{total}\t{killed}\t{survived}\t{score:.1f}\t{seconds}")
EOF
  tail -n 1 "$OUT/summary.tsv"
done
echo "results: $OUT (summary.tsv: key, mutants, killed, survived, score %, seconds)"
