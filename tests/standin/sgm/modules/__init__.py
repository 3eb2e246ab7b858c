from sgm.modules.encoders.modules import GeneralConditioner  # noqa: F401
