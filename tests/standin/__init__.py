"""Stand-ins of the Stable Diffusion WebUI 1.10.1 surface that the extension touches.

``tests/standin`` is put first on ``sys.path`` by the ``webui`` fixture, so ``import modules.x``
resolves here. Names, signatures and call order follow the 1.10.1 source; where a piece is
simplified, its docstring says how.
"""
