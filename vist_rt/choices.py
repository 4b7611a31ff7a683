"""Names of run-time choices, importable without torch (the CLI parser uses them)."""

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # auto: the fastest native path within the accuracy bounds
DEVICES = ("cpu", "cuda")
TEMPORAL = ("torch", "native")  # the streaming temporal model on the CPU: PyTorch, or PyTorch + compiled C kernels
