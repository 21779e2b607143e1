"""Sequence regressor of the Mapping Networks LSTM experiment (Table 7)."""
from torch import Tensor, nn


class LSTMRegressor(nn.Module):
    """``nn.LSTM(67, 32)`` + ``Linear(32, 1)`` = 12,961 parameters; predicts from the last time step."""

    def __init__(self, input_size: int = 67, hidden_size: int = 32, num_layers: int = 1, output_size: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, time, features) -> (batch, output_size)."""
        out, _ = self.lstm(x)
        return self.head(out[:, -1])
