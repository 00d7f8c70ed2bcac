#!/usr/bin/env bash
# Build llama-cpp-python as an AVX2-only host compiles it (no AVX-512, no AMX, no VNNI), into a
# directory of its own, so that the embedded judge's speed on an AVX2-only EPYC can be measured
# from any x86 host. The installed llama-cpp-python is left alone.
#
#   bash bench/avx2_llama.sh [DIR]          # ~10 min on 2 cores; DIR defaults to .avx2-llama
#   PYTHONPATH=DIR HRLAIF_CPU_ISA=avx2 hrlaif run ...       # the judge server then loads this build
#   PYTHONPATH=DIR HRLAIF_CPU_ISA=avx2 python bench/decode_speed.py --precisions fp32
#
# HRLAIF_CPU_ISA=avx2 holds torch and oneDNN to AVX2 (README: "Hosts"); this does the same for
# llama.cpp, which cannot be held back at run time because its kernels are chosen when it compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.avx2-llama}
PY=${PYTHON:-.venv/bin/python}
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
off="AVX512 AVX512_BF16 AVX512_VNNI AVX512_VBMI AMX_TILE AMX_INT8 AMX_BF16 AVX_VNNI"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
for f in $off; do CMAKE_ARGS="$CMAKE_ARGS -DGGML_$f=OFF"; done
export CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
"$PY" -m pip install -q --no-deps --no-cache-dir --target "$DIR" "llama-cpp-python==$VERSION"
echo "llama-cpp-python $VERSION for AVX2-only hosts in $DIR: put it first on PYTHONPATH"
