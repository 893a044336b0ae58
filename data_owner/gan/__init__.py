"""The conditional GAN with the mask mechanism (GD-REC section 3.1, after CFGAN) and its generated lists."""

from data_owner.gan.cgan import CGANConfig, CGANResult, Discriminator, Generator, generate_scores, train_cgan
from data_owner.gan.lists import GeneratedLists, generated_lists, generator_scorer, top_lists

__all__ = [
    "CGANConfig",
    "CGANResult",
    "Discriminator",
    "GeneratedLists",
    "Generator",
    "generate_scores",
    "generated_lists",
    "generator_scorer",
    "top_lists",
    "train_cgan",
]
