"""Exact parameter counts from the papers and forward shapes."""
import pytest
import torch

from nets import CNN1, CNN2, CifarResNet18, LSTMRegressor, ResNet50, TransferCNN


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("net, expected", [
    (CNN1(), 537_994), (CNN2(), 108_618), (CifarResNet18(10), 11_173_962), (CifarResNet18(100), 11_220_132),
    (LSTMRegressor(), 12_961), (ResNet50(), 25_557_032), (ResNet50(num_classes=2), 23_512_130),
    (TransferCNN(5), 56_229)])
def test_parameter_counts(net: torch.nn.Module, expected: int) -> None:
    assert count(net) == expected


def test_cnn_per_layer_counts_match_the_appendix_tables() -> None:
    layers = [m for m in CNN1().modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [count(m) for m in layers] == [320, 18_496, 73_856, 147_584, 295_168, 2_570]
    layers = [m for m in CNN2().modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [count(m) for m in layers] == [160, 4_640, 102_528, 1_290]


def test_forward_shapes() -> None:
    x = torch.randn(3, 1, 28, 28)
    assert CNN1()(x).shape == CNN2()(x).shape == TransferCNN()(x).shape == (3, 10)
    assert CifarResNet18(100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert LSTMRegressor()(torch.randn(4, 7, 67)).shape == (4, 1)


def test_resnet50_loads_local_weights_and_replaces_the_head(tmp_path) -> None:
    source = ResNet50()
    path = tmp_path / "resnet50.pth"
    torch.save(source.net.state_dict(), path)
    loaded = ResNet50(num_classes=2, weights_path=str(path))
    assert torch.equal(loaded.net.conv1.weight, source.net.conv1.weight)
    assert loaded.net.fc.out_features == 2
    with pytest.raises(FileNotFoundError, match="weights not found"):
        ResNet50(weights_path=str(tmp_path / "missing.pth"))


def test_transfer_cnn_loads_the_pretrained_body_and_keeps_a_fresh_head(tmp_path) -> None:
    pretrained = TransferCNN(5)
    path = tmp_path / "net.pt"
    torch.save(pretrained.state_dict(), path)
    torch.manual_seed(1)
    tuned = TransferCNN(5, weights_path=str(path))
    assert all(torch.equal(v, pretrained.state_dict()[k]) for k, v in tuned.state_dict().items() if not k.startswith("fc."))
    assert not torch.equal(tuned.fc.weight, pretrained.fc.weight)
    assert TransferCNN(3, weights_path=str(path)).fc.out_features == 3  # any head size
    torch.save(CNN2().state_dict(), tmp_path / "cnn2.pt")
    with pytest.raises(ValueError, match="does not hold TransferCNN weights"):
        TransferCNN(5, weights_path=str(tmp_path / "cnn2.pt"))
    with pytest.raises(FileNotFoundError, match="TransferCNN weights not found"):
        TransferCNN(5, weights_path=str(tmp_path / "missing.pt"))
