"""The WebUI 1.10.1 binding: the only package that imports the WebUI's ``modules.*``.

``generation`` is what the script calls; the other modules each hold one part of the work
(checkpoint resolution and loading, sampler wrapping, conds, low-VRAM handling, run state).
"""
