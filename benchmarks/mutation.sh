#!/usr/bin/env bash
# Mutation testing of the decision code: mutmut changes the code one small edit at a time and runs
# only the offline tests that reach the changed function; a mutant that no test notices is a hole.
# Modules: [tool.mutmut] only_mutate in pyproject.toml. Arguments narrow the run to mutant names
# (globs), e.g. benchmarks/mutation.sh 'sdxl_refiner.unet_config*'. Results: mutmut results,
# mutmut show <name>.
#
# Two passes, each with its own stats file: first every mutant against the tests that reach its
# function through at most 3 of the project's frames (a survivor costs seconds), then the
# survivors of that pass against every test that reaches them (a survivor costs about a minute).
# On 2 cores the whole list takes about two hours.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -m pip install --quiet 'mutmut==3.8.1'
mkdir -p mutants
rm -rf mutants/tests && cp -r tests mutants/tests

run_pass() {  # depth, then mutant names or globs
    local depth=$1
    shift
    if [ -f "mutants/stats-depth$depth.json" ]; then cp "mutants/stats-depth$depth.json" mutants/mutmut-stats.json; else rm -f mutants/mutmut-stats.json; fi
    MUTMUT_MAX_STACK_DEPTH=$depth python benchmarks/mutmut_cli.py run --max-children "${MUTMUT_CHILDREN:-2}" "$@" || true
    cp mutants/mutmut-stats.json "mutants/stats-depth$depth.json"
}

globs=("$@")
[ ${#globs[@]} -gt 0 ] || globs=('sdxl_refiner.*')
run_pass 3 "${globs[@]}"
mapfile -t left < <(mutmut results 2>/dev/null | awk -F': ' '/: (survived|no tests)$/ {gsub(/^ +/, "", $1); print $1}' \
    | while read -r name; do for glob in "${globs[@]}"; do [[ $name == $glob ]] && { echo "$name"; break; }; done; done)
echo "${#left[@]} mutants left after the direct tests; running them against every test that reaches them"
[ ${#left[@]} -eq 0 ] || run_pass -1 "${left[@]}"
mutmut results
