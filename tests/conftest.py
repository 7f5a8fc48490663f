import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# The Triton kernels run on CPU tensors under Triton's interpreter, which must be chosen before
# triton is first imported. On a GPU machine, set ADAMKIT_TRITON_COMPILED=1 to test the
# compiled kernels on CUDA tensors instead.
if os.environ.get("ADAMKIT_TRITON_COMPILED") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
