"""Perceptual losses: the HRInversion VGG16 conv-feature loss (d_conv, d_h) and its VGG16 trunk + weight loaders."""

from hrinv.losses.perceptual import PRESETS, PerceptualLoss, TargetFeatures, measure_calibration, tile_halo
from hrinv.losses.vgg import CAFFE, TORCHVISION, InputConvention, VGG16Conv, load_vgg16

__all__ = [
           "CAFFE",
           "PRESETS",
           "TORCHVISION",
           "InputConvention",
           "PerceptualLoss",
           "TargetFeatures",
           "VGG16Conv",
           "load_vgg16",
           "measure_calibration",
           "tile_halo",
]
