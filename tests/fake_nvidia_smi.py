"""Stand-in for a site's `nvidia-smi -i <uuid|index> -pl <watts>`: appends its arguments to $FAKE_SMI_LOG
(one JSON list a line) and sets the fake GPU's limit ($FAKE_NVML_SPEC, with a shared state file).
$FAKE_SMI_FAIL=1 makes it fail as nvidia-smi does without permission."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import fake_pynvml  # noqa: E402

args = sys.argv[1:]
with open(os.environ["FAKE_SMI_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if os.environ.get("FAKE_SMI_FAIL"):
    print("Changing power management limit is not supported for GPU: insufficient permissions", file=sys.stderr)
    sys.exit(4)
gpu, watts = args[args.index("-i") + 1], float(args[args.index("-pl") + 1])
fake_pynvml.nvmlInit()
handle = (fake_pynvml.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit()
          else fake_pynvml.nvmlDeviceGetHandleByUUID(gpu))
fake_pynvml.nvmlDeviceSetPowerManagementLimit(handle, int(watts * 1000))
print(f"Power limit for GPU {gpu} was set to {watts:.2f} W from ...")
