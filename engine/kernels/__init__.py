"""Triton kernels for the GPU forward pass, each beside the PyTorch reference it must match.

Every module holds a plain function taking torch tensors (the Triton path, CUDA tensors) and a
`*_ref` function in PyTorch that computes the same thing on any device: the tests' oracle and the
CPU path; the attention kernel's reference is the PyTorch attention backend. The modules import on a
CPU-only torch build, where Triton is absent (see triton_import).
"""
