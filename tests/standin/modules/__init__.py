"""Stand-in of the WebUI 1.10.1 ``modules`` package (see tests/standin/__init__.py)."""
