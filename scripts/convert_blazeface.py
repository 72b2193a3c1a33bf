"""Convert MediaPipe's BlazeFace short-range TFLite model to ONNX with a dynamic batch.

Usage: python convert_blazeface.py IN.tflite OUT.onnx

tflite2onnx (opset 11) turns the NHWC graph into NCHW with the batch fixed at 1:
the input is [1, 3, 128, 128] and four Reshape nodes flatten the anchor grids
with the constant shapes [1, -1, 1] and [1, -1, 16]. Setting that leading 1 to 0 ("copy the
input's dimension") and naming the batch dimension "N" lets one call run a
whole batch; the graph is otherwise untouched. Called by `darkroom models fetch`.
"""

import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from tflite2onnx import convert


def make_batch_dynamic(model: onnx.ModelProto) -> int:
    reshape_shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    patched = 0
    for init in model.graph.initializer:
        if init.name in reshape_shapes:
            shape = numpy_helper.to_array(init).copy()
            if shape[0] == 1:
                shape[0] = 0
                init.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), init.name))
                patched += 1
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "N"
    return patched


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    if os.path.exists(dst):
        os.remove(dst)
    convert(src, dst)
    model = onnx.load(dst)
    patched = make_batch_dynamic(model)
    if patched != 2:
        # The regressor and classificator Reshapes each share one shape constant.
        sys.exit(f"expected 2 batch-1 Reshape shapes in {src}, patched {patched}: tflite2onnx output changed?")
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    print(f"wrote {dst}: inputs {names[0]}, outputs {names[1]}")


if __name__ == "__main__":
    main()
