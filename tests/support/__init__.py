"""Real, small stand-ins for the models the tests sample with and the files they load."""
