#!/usr/bin/env bash
# The GPU check: everything we need from a GPU machine, in one call that fits its window
# (a GPU is lent to this project rarely, 15 minutes of device time in all and at most 10
# minutes a command; this script keeps to GPU_CHECK_BUDGET, 400 s by default, on one H200):
#
#   bash benchmarks/gpu_check.sh          # from the repository root, or any folder
#
# Phases, each announced with the UTC time and the seconds since the start:
#   1. build   pip install --no-deps --no-build-isolation -e . for sm_90 only
#              (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16, FASTFLOW_CUDA=1: a failed CUDA build is
#              an error; so is an extension that does not load with its CUDA kernels); then
#              fastflow.info() and nvidia-smi's name, driver and memory.
#   2. tests   the GPU tests: `pytest tests -m cuda -k "not cuda-torch"`, i.e. the cuda and
#              triton backends on CUDA tensors and the made_sample CUDA-kernel tests, without
#              the reference ('torch' backend) on the GPU; before them the four unmarked tests
#              that mean something only on a GPU machine (the build is the one expected, with
#              FASTFLOW_EXPECT_BUILD=cuda; the made_sample CUDA kernel is registered; info();
#              the reference sampler on the GPU). pytest-xdist workers and a per-test timeout
#              where those plugins are installed; JUnit XML to the output. The phase fails
#              when every selected test was skipped (no GPU visible to torch).
#   3. sanitizer  compute-sanitizer memcheck and racecheck on benchmarks/gpu_sanitizer_cases.py
#              (one small call of each CUDA kernel, forward and backward, made_sample's
#              shared-memory and global-scratch paths; PyTorch's caching allocator off, so
#              that memcheck sees each tensor's own bounds). Skipped with a note when
#              compute-sanitizer is not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin,
#              /usr/local/cuda/compute-sanitizer) or refuses the device (as on gVisor machines).
#   4. bench   python -m fastflow.bench, the quick configuration on the GPU: the reference,
#              dense and each fastflow provider that can run (cuda, triton), each checked
#              against the reference, then timed (--budget 0.1 s per measurement). torch.compile
#              of the reference only with GPU_CHECK_BENCH_COMPILE=1: its compiles take minutes
#              on a fresh machine.
# The pytest-benchmark suite (benchmarks/bench_cases.py) is left out: the runner times the
# same cases.
#
# Time: a phase is skipped, saying so, when the seconds elapsed plus its estimate (build 60,
# tests 60, sanitizer 40, bench 60) exceed GPU_CHECK_BUDGET. Each runs under `timeout` with
# what is left of the budget, capped (build 240 s, tests 180 s, sanitizer 120 s) so that a
# hang leaves time for the phases after it; the bench, last, gets all that is left. At the
# deadline pytest gets SIGINT, so that its JUnit XML and summary still cover the tests it
# ran. A failed phase does not stop the later ones. At the end a table gives each phase's
# status (ok / FAILED rc / skipped) and seconds. Exit status: 1 when a phase failed, 2 when
# no GPU is visible (to nvidia-smi or torch: every phase is skipped, nothing built), else 0.
#
# Environment (all optional):
#   OUT                       output folder (default benchmarks/results/<gpu>/, <gpu> a slug of
#                             nvidia-smi's name such as nvidia-h200, or "gpu")
#   GPU_CHECK_BUDGET          seconds for the whole run (default 400)
#   GPU_CHECK_PHASES          the phases to run (default "build tests sanitizer bench"; e.g.
#                             "tests bench" to rerun on a machine that already built fastflow)
#   GPU_CHECK_FORCE=1         run the phases even where no GPU is visible (to test this script)
#   PYTHON                    the interpreter (default: python3, else python, that has torch)
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS, FASTFLOW_CUDA   the build's (defaults 9.0, 16, 1)
#   GPU_CHECK_PYTEST_K        -k for the `cuda` tests (default "not cuda-torch"; empty: all)
#   GPU_CHECK_PYTEST_WORKERS  pytest-xdist workers (default 8 where xdist is installed; 0: none)
#   GPU_CHECK_TEST_TIMEOUT    seconds per test (default 120; pytest-timeout, else a traceback
#                             dump through pytest's faulthandler_timeout)
#   GPU_CHECK_SANITIZER_TOOLS compute-sanitizer tools (default "memcheck racecheck"; initcheck
#                             and synccheck also work)
#   GPU_CHECK_SANITIZER_ARGS  arguments for gpu_sanitizer_cases.py (default: every case in
#                             float32; e.g. "--dtypes float32,bfloat16" or "--ops made_sample")
#   GPU_CHECK_BENCH_ARGS      arguments for python -m fastflow.bench (default "--budget 0.1")
#   GPU_CHECK_BENCH_COMPILE=1 also time torch.compile of the reference (reference-compile)
#
# Outputs, in the output folder: gpu_check.log (all that this script prints), pytest-gpu.xml
# (JUnit), sanitizer.log (each tool's full output), and the bench's quick.md (its table),
# quick.csv, quick.json and plots quick-<op>.png (packed into quick-plots.tar when OUT is set:
# the device tool brings back at most 8 files; quick.json is gzipped if over 15 MiB).
#
# After a run: commit the results (benchmarks/results/<gpu>/), then enable in `auto` (the
# `auto["cuda"]` of each op's registry entry, in fastflow/ops/<op>.py) each backend that
# passed its tests, the sanitizers and the bench's checks; the README's ops table is
# regenerated from the registry (tests/test_readme.py says how).
# shellcheck disable=SC2317  # the phase_* functions are called as "phase_$name"
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-400}
PHASES=${GPU_CHECK_PHASES:-build tests sanitizer bench}
PYTEST_K=${GPU_CHECK_PYTEST_K-not cuda-torch}
TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-120}
SANITIZER_TOOLS=${GPU_CHECK_SANITIZER_TOOLS:-memcheck racecheck}
BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:---budget 0.1}
# Per phase: the least time worth starting it with, and the most it may take (0: no cap).
declare -A ESTIMATE=([build]=60 [tests]=60 [sanitizer]=40 [bench]=60)
declare -A CAP=([build]=240 [tests]=180 [sanitizer]=120 [bench]=0)
ORDER=(build tests sanitizer bench)
declare -A TITLE=([build]="build (sm_90) and fastflow.info()" [tests]="GPU tests (cuda and triton backends on CUDA tensors)"
                  [sanitizer]="compute-sanitizer memcheck and racecheck" [bench]="python -m fastflow.bench (quick, on the GPU)")

if ! [[ $BUDGET =~ ^[0-9]+$ ]]; then
    echo "gpu_check: GPU_CHECK_BUDGET must be a number of seconds, got '$BUDGET'" >&2
    exit 2
fi

# --- the interpreter, the GPU, the output folder -------------------------------------------
has_module() {  # has_module NAME: the interpreter can import NAME (found without importing it)
    "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)' "$1" 2>/dev/null
}
PY=${PYTHON:-}
if [[ -z $PY ]]; then
    for candidate in python3 python; do
        PY=$candidate
        if command -v "$candidate" >/dev/null 2>&1 && has_module torch; then break; fi
        PY=""
    done
    PY=${PY:-python3}
fi

GPU_NAME=""
GPU_NOTE=""
if command -v nvidia-smi >/dev/null 2>&1; then
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || GPU_NAME=""
    [[ -n $GPU_NAME ]] || GPU_NOTE="nvidia-smi found no GPU"
else
    GPU_NOTE="nvidia-smi not found"
fi
if [[ -z $GPU_NAME ]] && "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    GPU_NAME=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null) || GPU_NAME=""
    GPU_NOTE="$GPU_NOTE; torch sees ${GPU_NAME:-a GPU}"
fi
SLUG=$(printf '%s' "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')
SLUG=${SLUG:-gpu}

DIR=${OUT:-benchmarks/results/$SLUG}
mkdir -p "$DIR" || { echo "gpu_check: cannot create the output folder $DIR" >&2; exit 2; }
DIR=$(cd "$DIR" && pwd)
LOG="$DIR/gpu_check.log"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
exec > >(tee "$LOG") 2>&1
TEE_PID=$!

elapsed() { echo $(( $(date +%s) - START )); }
stamp() { echo "[$(date -u +%H:%M:%S) +$(elapsed)s]"; }

echo "== $(stamp) gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget ${BUDGET}s, phases: $PHASES"
echo "   repository $(pwd) (commit $(git describe --always --dirty 2>/dev/null || echo unknown))"
echo "   output     $DIR"
echo "   python     $PY ($("$PY" --version 2>&1)); $(nproc 2>/dev/null || echo '?') CPUs"
if [[ -n $GPU_NAME ]]; then
    echo "   GPU        $GPU_NAME${GPU_NOTE:+ ($GPU_NOTE)}"
else
    echo "   GPU        NONE VISIBLE ($GPU_NOTE; torch sees none either)"
fi

# --- phases ----------------------------------------------------------------------------------
declare -A STATUS SECONDS_TAKEN
FAILED=0
PHASE_DEADLINE=0
SKIP_NOTE=""  # set by a phase that finds it cannot run here: it is then recorded as skipped

remaining() {  # seconds left before this phase's deadline (at least 1)
    local left=$(( PHASE_DEADLINE - $(date +%s) ))
    (( left > 0 )) && echo "$left" || echo 1
}

rc_text() {
    case $1 in
        124|137) echo "FAILED $1 (timed out)" ;;
        *) echo "FAILED $1" ;;
    esac
}

run_phase() {  # run_phase NUMBER NAME
    local n=$1 name=$2 el left limit t0 rc
    el=$(elapsed)
    echo
    echo "== $(stamp) phase $n/${#ORDER[@]}: ${TITLE[$name]}"
    if [[ " $PHASES " != *" $name "* ]]; then
        echo "-- skipped: not in GPU_CHECK_PHASES ($PHASES)"
        STATUS[$name]="skipped (not asked)"; SECONDS_TAKEN[$name]=0; return
    fi
    if [[ -z $GPU_NAME && ${GPU_CHECK_FORCE:-0} != 1 ]]; then
        echo "-- skipped: no GPU visible ($GPU_NOTE); this script is for a GPU machine (GPU_CHECK_FORCE=1 runs it anyway)"
        STATUS[$name]="skipped (no GPU)"; SECONDS_TAKEN[$name]=0; return
    fi
    if (( el + ${ESTIMATE[$name]} > BUDGET )); then
        echo "-- skipped: ${el}s elapsed + about ${ESTIMATE[$name]}s for this phase > budget ${BUDGET}s (GPU_CHECK_BUDGET)"
        STATUS[$name]="skipped (budget)"; SECONDS_TAKEN[$name]=0; return
    fi
    left=$(( BUDGET - el ))
    limit=$left
    if (( ${CAP[$name]} > 0 && ${CAP[$name]} < limit )); then limit=${CAP[$name]}; fi
    echo "-- time limit ${limit}s (${left}s of the budget left)"
    t0=$(date +%s)
    PHASE_DEADLINE=$(( t0 + limit ))
    SKIP_NOTE=""
    "phase_$name"
    rc=$?
    SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
    if [[ -n $SKIP_NOTE ]]; then
        echo "-- skipped: $SKIP_NOTE"
        STATUS[$name]="skipped ($SKIP_NOTE)"
    elif (( rc == 0 )); then
        STATUS[$name]="ok"
    else
        STATUS[$name]=$(rc_text "$rc")
        FAILED=1
    fi
    echo "-- $(stamp) phase $n ${name}: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s"
}

phase_build() {
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    export MAX_JOBS=${MAX_JOBS:-16}
    export FASTFLOW_CUDA=${FASTFLOW_CUDA:-1}
    local rc
    echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS FASTFLOW_CUDA=$FASTFLOW_CUDA"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "(nvidia-smi failed)"
    if command -v nvcc >/dev/null 2>&1; then nvcc --version | tail -n 2; else echo "nvcc: not on PATH (setup.py also looks in CUDA_HOME, /usr/local/cuda)"; fi
    "$PY" -c 'import torch; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU visible: {torch.cuda.is_available()}")' 2>&1
    echo "\$ $PY -m pip install --no-deps --no-build-isolation -e ."
    timeout -k 10 "$(remaining)" "$PY" -m pip install --no-deps --no-build-isolation -e . >"$TMP/build.log" 2>&1
    rc=$?
    if (( rc == 0 )); then
        tail -n 3 "$TMP/build.log"
    else
        cat "$TMP/build.log"
        echo "build FAILED ($(rc_text "$rc")); the later phases run on what is there (the triton backend needs no build)"
    fi
    echo "\$ $PY -c \"import fastflow; print(fastflow.info())\""
    timeout -k 5 "$(remaining)" "$PY" -c "import fastflow; print(fastflow.info())" || { (( rc )) || rc=1; }
    # The build must have loaded, with CUDA kernels when FASTFLOW_CUDA asks for them.
    timeout -k 5 "$(remaining)" "$PY" - "$FASTFLOW_CUDA" <<'EOF' || { (( rc )) || rc=1; }
import sys
from fastflow._extension import EXTENSION as ext
want_cuda = sys.argv[1].strip().lower() not in ("0", "off", "false", "no")
if not ext.loaded:
    sys.exit(f"extension NOT loaded: {ext.error}")
if want_cuda and not ext.cuda:
    sys.exit("extension loaded WITHOUT its CUDA kernels")
print(f"extension loaded; CUDA kernels: {', '.join(ext.cuda_arch) if ext.cuda else 'none'}")
EOF
    return "$rc"
}

phase_tests() {
    local workers rc rc_extra
    local -a args extra
    args=(tests -m cuda -q -p no:cacheprovider -rfE --tb=short --durations=15
          -W ignore::DeprecationWarning --junitxml "$DIR/pytest-gpu.xml")
    [[ -n $PYTEST_K ]] && args+=(-k "$PYTEST_K")
    rm -f "$DIR/pytest-gpu.xml"  # counted below: not one from an earlier run
    if [[ -n ${GPU_CHECK_PYTEST_WORKERS:-} ]]; then
        workers=$GPU_CHECK_PYTEST_WORKERS
    elif has_module xdist; then
        workers=8
    else
        workers=0
    fi
    if (( workers > 0 )); then
        args+=(-n "$workers")
        # One inductor compile process per worker, not a pool of one per CPU in each.
        export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}
    else
        echo "(pytest-xdist not installed, or GPU_CHECK_PYTEST_WORKERS=0: one process)"
    fi
    if has_module pytest_timeout; then
        args+=(--timeout "$TEST_TIMEOUT")
    else
        args+=(-o "faulthandler_timeout=$TEST_TIMEOUT")
    fi
    [[ ${FASTFLOW_CUDA:-1} =~ ^(0|off|false|no)$ ]] || export FASTFLOW_EXPECT_BUILD=cuda

    # First the few unmarked tests that mean something only on a GPU machine (the build is the
    # one expected, the made_sample CUDA kernel is registered, info() and the reference on the
    # GPU); a rename leaves none selected, which is only reported.
    extra=(tests/test_backend.py tests/test_made_sample.py -q -p no:cacheprovider -rA --tb=short
           -W ignore::DeprecationWarning
           -k "expected_build or info_says_what_was_built or cuda_kernel_registered or gpu_reference_backend")
    echo "\$ $PY -m pytest ${extra[*]}"
    timeout -k 10 "$(remaining)" "$PY" -m pytest "${extra[@]}"
    rc_extra=$?
    (( rc_extra == 5 )) && { echo "(none of those tests found: renamed?)"; rc_extra=0; }

    # Then the tests marked `cuda`. At the deadline pytest gets SIGINT, so that it still
    # writes the JUnit XML and its summary for the tests it ran (the wrapper restores Python's
    # SIGINT handler, which a shell that ignores SIGINT in background jobs passes on ignored).
    echo "\$ $PY -m pytest ${args[*]}"
    timeout -s INT -k 15 "$(remaining)" "$PY" -c \
        'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(pytest.main(sys.argv[1:]))' \
        "${args[@]}"
    rc=$?
    (( rc == 5 )) && echo "pytest selected no tests: check GPU_CHECK_PYTEST_K and the cuda marker"
    # The counts from the JUnit XML; a run where every test was skipped tested nothing.
    "$PY" - "$DIR/pytest-gpu.xml" <<'EOF' || { (( rc )) || rc=1; }
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as error:
    sys.exit(f"no JUnit XML to count: {error}")
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
ran = n["tests"] - n["skipped"]
print(f"GPU tests: {n['tests']} selected, {ran - n['failures'] - n['errors']} passed, "
      f"{n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped")
if ran == 0:
    sys.exit("no GPU test ran (all skipped): is the GPU visible to torch, is fastflow built?")
EOF
    (( rc == 0 )) && rc=$rc_extra
    return "$rc"
}

find_sanitizer() {
    local candidate nvcc_bin=""
    nvcc_bin=$(command -v nvcc 2>/dev/null) && nvcc_bin=$(dirname "$(readlink -f "$nvcc_bin")")
    for candidate in "$(command -v compute-sanitizer 2>/dev/null)" \
                     "${CUDA_HOME:+$CUDA_HOME/bin/compute-sanitizer}" \
                     "${CUDA_HOME:+$CUDA_HOME/compute-sanitizer/compute-sanitizer}" \
                     /usr/local/cuda/bin/compute-sanitizer \
                     /usr/local/cuda/compute-sanitizer \
                     /usr/local/cuda/compute-sanitizer/compute-sanitizer \
                     "${nvcc_bin:+$nvcc_bin/compute-sanitizer}"; do
        if [[ -n $candidate && -f $candidate && -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

phase_sanitizer() {
    local sanitizer tool rc=0 tool_rc n_left limit unsupported=0 ran=0 file="$DIR/sanitizer.log"
    local -a tools case_args
    read -r -a tools <<<"$SANITIZER_TOOLS"
    read -r -a case_args <<<"${GPU_CHECK_SANITIZER_ARGS:-}"
    if ! sanitizer=$(find_sanitizer); then
        SKIP_NOTE="compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin, /usr/local/cuda/compute-sanitizer)"
        return 0
    fi
    echo "$sanitizer: $("$sanitizer" --version 2>&1 | tail -n 1)"
    : >"$file"
    n_left=${#tools[@]}
    for tool in "${tools[@]}"; do
        limit=$(( $(remaining) / n_left ))
        (( limit > 0 )) || limit=1
        n_left=$(( n_left - 1 ))
        echo "\$ compute-sanitizer --tool $tool --error-exitcode 1 $PY benchmarks/gpu_sanitizer_cases.py ${case_args[*]}   (limit ${limit}s)"
        echo "### compute-sanitizer --tool $tool ($(date -u +%H:%M:%S))" >>"$file"
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 10 "$limit" \
            "$sanitizer" --tool "$tool" --error-exitcode 1 \
            "$PY" benchmarks/gpu_sanitizer_cases.py "${case_args[@]}" >"$TMP/sanitizer.out" 2>&1
        tool_rc=$?
        cat "$TMP/sanitizer.out" >>"$file"
        echo "### exit status $tool_rc" >>"$file"
        if grep -q "Device not supported" "$TMP/sanitizer.out"; then
            grep -m 3 "Device not supported\|Error" "$TMP/sanitizer.out"
            echo "$tool: compute-sanitizer does not support the device here (as on gVisor machines): not a finding"
            unsupported=$(( unsupported + 1 ))
            break  # the next tool would be refused too
        fi
        ran=$(( ran + 1 ))
        if (( $(wc -l <"$TMP/sanitizer.out") > 120 )); then
            head -n 60 "$TMP/sanitizer.out"; echo "[... $(wc -l <"$TMP/sanitizer.out") lines: the whole in sanitizer.log ...]"; tail -n 40 "$TMP/sanitizer.out"
        else
            cat "$TMP/sanitizer.out"
        fi
        if (( tool_rc == 0 )); then
            echo "$tool: ok"
        else
            echo "$tool: $(rc_text "$tool_rc")"
            rc=$tool_rc
        fi
    done
    if (( ran == 0 && unsupported > 0 )); then
        SKIP_NOTE="compute-sanitizer does not support the device here"
        return 0
    fi
    return "$rc"
}

phase_bench() {
    local providers rc png json
    local -a extra
    read -r -a extra <<<"$BENCH_ARGS"
    # No stale results from an earlier run beside this run's log.
    (cd "$DIR" && rm -f quick.md quick.csv quick.json quick.json.gz quick-*.png quick-plots.tar)
    providers=$(timeout -k 5 "$(remaining)" "$PY" -c 'import torch
from fastflow.bench.runner import fastflow_providers
print(",".join(["reference", "dense"] + fastflow_providers(torch.device("cuda"))))') || {
        echo "could not list the fastflow providers for cuda (see above)"; return 1; }
    if [[ ${GPU_CHECK_BENCH_COMPILE:-0} == 1 ]]; then providers="reference,reference-compile,${providers#reference,}"; fi
    [[ $providers == *cuda* || $providers == *triton* ]] || echo "NOTE: no fastflow provider can run on the GPU here: only the reference is timed"
    echo "\$ $PY -m fastflow.bench --device cuda --providers $providers --out $DIR --no-progress ${extra[*]}"
    timeout -k 10 "$(remaining)" "$PY" -m fastflow.bench --device cuda --providers "$providers" \
        --out "$DIR" --no-progress "${extra[@]}"
    rc=$?
    (( rc == 1 )) && echo "fastflow.bench: a fastflow provider FAILED its check against the reference (see the table)"
    # What comes back from OUT is at most 8 files of at most 16 MiB each.
    if [[ -n ${OUT:-} ]]; then
        png=$(cd "$DIR" && ls quick-*.png 2>/dev/null)
        if [[ -n $png ]]; then
            # shellcheck disable=SC2086  # one name per line, no spaces
            (cd "$DIR" && tar -cf quick-plots.tar $png && rm -f $png) && echo "plots packed into quick-plots.tar"
        fi
        json="$DIR/quick.json"
        if [[ -f $json ]] && (( $(stat -c %s "$json") > 15 * 1024 * 1024 )); then
            gzip -f "$json" && echo "quick.json is over 15 MiB: gzipped to quick.json.gz"
        fi
    fi
    return "$rc"
}

n=0
for name in "${ORDER[@]}"; do
    n=$(( n + 1 ))
    run_phase "$n" "$name"
done

# --- summary -----------------------------------------------------------------------------------
echo
echo "== $(stamp) summary (budget ${BUDGET}s)"
printf '%-10s %-60s %s\n' phase status seconds
for name in "${ORDER[@]}"; do
    printf '%-10s %-60s %s\n' "$name" "${STATUS[$name]:0:60}" "${SECONDS_TAKEN[$name]}"
done
echo "output: $DIR"
find "$DIR" -maxdepth 2 -type f -printf '  %10s  %P\n' | sort -k 2
if [[ -n ${OUT:-} ]]; then
    count=$(find "$DIR" -type f | wc -l)
    (( count > 8 )) && echo "WARNING: $count files in OUT; only 8 come back"
    find "$DIR" -type f -size +16M -printf 'WARNING: %f is over 16 MiB and will not come back\n'
fi
status=0
if [[ -z $GPU_NAME && ${GPU_CHECK_FORCE:-0} != 1 ]]; then
    echo "RESULT: nothing checked: no GPU visible ($GPU_NOTE)"
    status=2
elif (( FAILED )); then
    echo "RESULT: FAILED (see the phases above)"
    status=1
else
    echo "RESULT: ok. Next: commit $DIR's results, then enable in 'auto' each backend that passed."
fi
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit "$status"
