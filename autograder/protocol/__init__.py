"""The judge/student protocol: frames over pipes, a safe value encoding, registered specs.

Nothing here unpickles: values travel as a JSON header plus raw tensor bytes, and the
decoder checks every field before it builds a tensor. This package imports nothing of
the project above it, so the sandboxed child can carry it alone.
"""

from .codec import ProtocolError, Spec, decode, encode
from .framing import read_frame, write_frame

__all__ = ["ProtocolError", "Spec", "decode", "encode", "read_frame", "write_frame"]
