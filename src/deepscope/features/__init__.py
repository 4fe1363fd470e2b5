"""After training: what units learned (filters, activation maps, dead units, receptive fields, top dataset
patches, activation maximisation, deep dream, evolution over training)."""

from .activations import Activations, DeadUnits, activations, dead_units
from .dream import dream
from .evolution import Evolution, evolution, features_tag
from .filters import Filters, filters, noise_score, untrained_noise_sd
from .maximize import PRESETS, Maximization, Recipe, maximize
from .multifaceted import Facets, multifaceted
from .objectives import Objective, activation_norm, channel, channels, logit, neuron
from .patches import PatchProjections, TopPatches, top_patches
from .receptive_field import ReceptiveField, receptive_field

__all__ = [
    "PRESETS",
    "Activations",
    "DeadUnits",
    "Evolution",
    "Facets",
    "Filters",
    "Maximization",
    "Objective",
    "PatchProjections",
    "ReceptiveField",
    "Recipe",
    "TopPatches",
    "activation_norm",
    "activations",
    "channel",
    "channels",
    "dead_units",
    "dream",
    "evolution",
    "features_tag",
    "filters",
    "logit",
    "maximize",
    "multifaceted",
    "neuron",
    "noise_score",
    "receptive_field",
    "top_patches",
    "untrained_noise_sd",
]
