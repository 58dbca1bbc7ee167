"""Build an ``nn.Module`` from a :class:`ModelConfig`.

The blocks are torchvision's own (``BasicBlock`` and ``Bottleneck``, ResNet
v1.5 with the stride on the 3x3 conv), and the module names follow
torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1``.., ``fc``), so an
ImageNet preset has exactly torchvision's ``state_dict`` keys and shapes and
torchvision's pretrained weights load into it unchanged.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from .config import ModelConfig, StagePlan

_BLOCK_CLASSES = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet / ResNeXt with a configurable stem, stage layout and widths."""

    def __init__(self, config: ModelConfig, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.config = config
        block_cls = _BLOCK_CLASSES[config.block]
        stem_width = config.resolved_stem_width()
        if config.stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            pool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, stem_width, 3, stride=1, padding=1, bias=False)
            pool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        # Registered after bn1/relu so the children run in order, as torchvision's
        # IntermediateLayerGetter (BackboneWithFPN) assumes.
        self.maxpool = pool

        in_channels = stem_width
        self.stage_names: List[str] = []
        for plan in config.stages():
            name = f"layer{plan.index}"
            setattr(self, name, _make_stage(block_cls, in_channels, plan, config))
            self.stage_names.append(name)
            in_channels = plan.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, config.num_classes)
        _init_weights(self, zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


def _make_stage(block_cls, in_channels: int, plan: StagePlan, config: ModelConfig) -> nn.Sequential:
    layers = []
    for i in range(plan.blocks):
        stride = plan.stride if i == 0 else 1
        downsample = None
        if stride != 1 or in_channels != plan.out_channels:
            # Projection shortcut (1x1 conv + BN), as torchvision and pycls build it.
            downsample = nn.Sequential(conv1x1(in_channels, plan.out_channels, stride),
                                       nn.BatchNorm2d(plan.out_channels))
        if block_cls is Bottleneck:
            block = Bottleneck(in_channels, plan.planes, stride, downsample,
                               groups=config.cardinality, base_width=config.bottleneck_width)
        else:
            block = BasicBlock(in_channels, plan.planes, stride, downsample)
        layers.append(block)
        in_channels = plan.out_channels
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    # The same initialisation as torchvision's ResNet, so both start alike.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def build_model(config: ModelConfig, zero_init_residual: bool = False) -> ResNet:
    """Instantiate the network described by ``config`` (weights freshly initialised)."""
    return ResNet(config, zero_init_residual=zero_init_residual)
