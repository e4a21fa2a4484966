"""Whether the decode attention kernel of this checkout compiles to the same PTX as another commit's, for the tiles
the engines run (TOGETHER on and off, PDL on and off, STAGES=0 where it exists). Runs on a CPU: Triton compiles for
an sm_90 target without a GPU. Line info is left out (TRITON_DISABLE_LINE_INFO=1), so moved source lines do not count.

    python scripts/attention_ptx_same.py 9d5bb70      # exit 0: identical for every tile; 1: some differ
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
REPO = Path(__file__).resolve().parents[1]
KERNEL = "energybench/model/decode_attention_kernel.py"
TILES = ((64, 2, 1), (32, 2, 4), (16, 2, 16), (64, 2, 2))  # (block_t, warps, splits) of split_plan's rules
SIGNATURE = {"q_ptr": "*fp16", "k_ptr": "*fp16", "v_ptr": "*fp16", "lens_ptr": "*i32", "out_ptr": "*fp16",
             "m_ptr": "*fp32", "l_ptr": "*fp32", "acc_ptr": "*fp32", "scale_log2": "fp32",
             **{name: "i32" for name in ("stride_qb", "stride_qh", "stride_kb", "stride_kt", "stride_kh", "stride_vb",
                                         "stride_vt", "stride_vh", "stride_ob", "stride_oh", "S")}}


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ptx(kernel, constants: dict, warps: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params = inspect.signature(kernel.fn).parameters
    constants = {k: v for k, v in constants.items() if k in params}  # STAGES only where the kernel has it
    src = ASTSource(kernel, {**SIGNATURE, **{k: "constexpr" for k in constants}}, constexprs=constants)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps, "num_stages": 1, "launch_pdl": constants["PDL"]})
    return compiled.asm["ptx"]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("give one commit to compare with, e.g. python scripts/attention_ptx_same.py 9d5bb70")
    old_source = subprocess.run(["git", "-C", str(REPO), "show", f"{argv[0]}:{KERNEL}"], capture_output=True, text=True)
    if old_source.returncode != 0:
        raise SystemExit(f"commit {argv[0]!r} has no {KERNEL}: {old_source.stderr.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        old_path = Path(tmp) / "old_kernel.py"
        old_path.write_text(old_source.stdout)
        old, new = load(old_path, "old_kernel"), load(REPO / KERNEL, "new_kernel")
        same = True
        for together in (False, True):
            for block_t, warps, splits in TILES:
                for pdl in (False, True):
                    c = {"H": 32, "SPLITS": splits, "D": 128, "BLOCK_T": block_t, "PDL": pdl, "TOGETHER": together,
                         "STAGES": 0}
                    equal = ptx(old._decode_attention_partial, c, warps) == ptx(new._decode_attention_partial, c,
                                                                                   warps)
                    same &= equal
                    print(f"together={together} tile={block_t}/{warps}/{splits} pdl={pdl}: "
                          f"{'identical' if equal else 'DIFFERENT'}")
    print("identical for every tile" if same else "some tiles differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
