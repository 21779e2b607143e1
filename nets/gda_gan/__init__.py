"""Balaji et al. (ICLR 2021): the GAN nets with width knobs, the theory model's closed forms, FID feature nets."""
from nets.gda_gan.dcgan import DCGANCritic32, DCGANCritic64, DCGANGenerator32, DCGANGenerator64
from nets.gda_gan.fid_features import ClassifierFeatures, InceptionFeatures, TinyFeatures, TorchScriptFeatures
from nets.gda_gan.mlp import MLPCritic, MLPGenerator
from nets.gda_gan.resnet import ResNetCritic32, ResNetCritic64, ResNetGenerator32, ResNetGenerator64

__all__ = ["DCGANCritic32", "DCGANCritic64", "ClassifierFeatures", "DCGANGenerator32", "DCGANGenerator64", "InceptionFeatures",
           "MLPCritic", "MLPGenerator", "ResNetCritic32", "ResNetCritic64", "ResNetGenerator32", "ResNetGenerator64",
           "TinyFeatures", "TorchScriptFeatures"]
