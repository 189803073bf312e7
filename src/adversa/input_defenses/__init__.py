"""Input-side defenses: transforms a defended model applies to its input (reconstruction,
squeezing, randomization, MagNet's reformer) and detectors of adversarial inputs, each an
`nn.Module` or a scorer, so a defended model is still a model. `spec` parses their
command-line specs (`jpeg:quality=75`, `magnet:dir=DIR`)."""
