"""Shared command-line plumbing of the experiments."""


def fill_from_preset(args, presets: dict):
    """Sets every argument left at None from the chosen preset (``--smoke`` wins over ``--preset``)."""
    preset = presets["smoke" if args.smoke else args.preset]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args
