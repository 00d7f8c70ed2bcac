"""Launch `llama_cpp.server` with weight repacking into extra buffer types turned off.

pip compiles llama.cpp for the host it installs on, and its CPU backend then "repacks"
quantised weights into extra buffer types (CPU_REPACK, and AMX tiles on Xeons with
`amx_int8`/`amx_bf16`). On some AMX hosts the first request kills the server with a general
protection fault at `ldtilecfg`. Loading with `llama_model_params.use_extra_bufts = False`
keeps the weights in plain CPU buffers on every host, so no CPU-specific kernel path is
taken; for a 135M judge the speed difference is within noise.

`llama_cpp.server` exposes no flag for it, and `Llama()` builds its model params from
`llama_model_default_params()` at load time, so we wrap that function before the server
loads the model. Usage (what `hrlaif.judges.server.embedded_judge` runs):

    python -m hrlaif.judges.llama_launcher --model X.gguf --port N ...   # llama_cpp.server's flags
    python -m hrlaif.judges.llama_launcher --dequantize SRC.gguf DST.gguf bf16   # a float copy
"""
from __future__ import annotations

import sys


def disable_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as lib

    default_params = lib.llama_model_default_params

    def params():
        p = default_params()
        p.use_extra_bufts = False  # no CPU_REPACK / AMX buffers: the same code path on every CPU
        return p

    lib.llama_model_default_params = params


def dequantize(src: str, dst: str, fmt: str) -> None:
    """Write `src` with its weights in `fmt` (f16 | bf16 | q8_0): llama.cpp's own quantize tool, which
    dequantises a quantised model when asked for a float type, and requantises it for q8_0 (8 bits per
    weight and a scale per block of 32: within 1/254 of each block's largest weight of the Q4_1 values)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
                    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[fmt]
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize returned {rc}")


def main() -> None:
    if sys.argv[1:2] == ["--dequantize"]:
        dequantize(*sys.argv[2:5])
        return
    disable_extra_buffer_types()
    print("hrlaif: llama.cpp extra buffer types disabled (use_extra_bufts=False)", file=sys.stderr, flush=True)
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
