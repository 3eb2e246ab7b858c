"""The layer every WebUI-family host shares: the panel, paste, X/Y/Z, options, the refiner's
prompts and text encoder, the per-generation run state and the sampling skeleton. It imports the
``modules`` surface the hosts have in common; what differs is a binding's (``binding.HostBinding``)."""
