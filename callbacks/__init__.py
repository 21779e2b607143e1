"""Lightning callbacks and loggers shared by every method."""
from callbacks.csv_logger import ResumableCSVLogger, truncate_metrics
from callbacks.run_callbacks import (FlushLogsOnCheckpoint, NaNGuard, NonFiniteLossError, ParameterCounts, RNGState,
                                     RunCheckpoint, RunStats, parameter_counts)
from callbacks.neuron_pursuit import NeuronPursuit

from callbacks.ntk import NTKMonitor
from callbacks.fid import FID
__all__ = ["NTKMonitor", "FlushLogsOnCheckpoint", "NaNGuard", "NonFiniteLossError", "ParameterCounts", "RNGState",
           "ResumableCSVLogger", "RunCheckpoint", "RunStats", "parameter_counts", "truncate_metrics", "NeuronPursuit",
           "FID"]
