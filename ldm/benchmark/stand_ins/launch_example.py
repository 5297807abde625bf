"""Run a diffusers example script as `python <script> <args>` would, with the stand-ins importable.

    python ldm/benchmark/stand_ins/launch_example.py EXAMPLE.py [its arguments]

transformers counts any importable `torchvision` as installed and then imports parts of it that the
stand-in does not have. So the libraries decide first, with the stand-ins out of sight (torchvision:
unavailable, as it is here), and only then is lib/ put on the path for the example's own
`from torchvision import transforms`. Standalone on purpose: it imports nothing of ldm.
"""

import runpy
import sys
from pathlib import Path

import diffusers.utils.import_utils
import transformers.utils.import_utils

if __name__ == "__main__":
    # Both answers are cached from here on, so the stand-in below cannot change them.
    if (
        transformers.utils.import_utils.is_torchvision_available()
        or diffusers.utils.import_utils.is_torchvision_available()
    ):
        sys.exit("launch_example.py: a real torchvision is installed; run the example directly instead")
    example = Path(sys.argv[1]).resolve()
    sys.argv = [str(example), *sys.argv[2:]]
    sys.path[0] = str(example.parent)  # as when the example is run directly
    sys.path.insert(1, str(Path(__file__).resolve().parent / "lib"))
    runpy.run_path(str(example), run_name="__main__")
