"""Quick start: what knetcnn sees, and what cuDNN would be given for Knet's first conv4 example.

Run with `make demo` (or `python examples/quickstart.py` once knetcnn is installed).
"""

import knetcnn

# Knet's manual: w = [1,2,3] (size 3,1,1,1), x = [1..7] (size 7,1,1,1), conv4(w, x; padding=1).
# In NumPy's C-order convention the same arrays are w: (1, 1, 3) and x: (1, 1, 7).
d = knetcnn.describe("conv4", (1, 1, 3), (1, 1, 7), padding=1, dtype="float32")
print("conv4 on (1,1,7) with a (1,1,3) kernel, padding=1:")
print("  cuDNN input  ", d["input"]["dims"], "(1-D is lifted to 2-D with a singleton axis)")
print("  cuDNN filter ", d["filter"]["dims"])
print("  cuDNN conv   ", {k: d["convolution"][k] for k in ("padding", "stride", "dilation", "mode")})
print("  output shape ", d["geometry"]["output_shape"], "== cuDNN's", d["cudnn_forward_output_dims"])
