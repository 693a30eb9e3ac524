"""Network drivers behind one contract (libnetwork's): the engine never asks which one it talks to."""
