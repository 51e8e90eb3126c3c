"""GPKE supplier change (LFW24), grid operator (NB) side. See ``workflow`` for the process."""
