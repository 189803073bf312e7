"""Physical-world attacks: adversarial patches, universal perturbations and masked
perturbations (stickers, eyeglass frames) that survive transformations of the scene."""
