"""One binding per host, side by side, none importing another: ``webui`` (WebUI 1.10), ``forge``
(Forge 2) and ``neo`` (Forge Neo); ``patcher`` is the ``UnetPatcher`` route the last two share."""
