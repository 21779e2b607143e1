"""Lightning callbacks and loggers shared by every method."""
from callbacks.csv_logger import ResumableCSVLogger, truncate_metrics
from callbacks.neuron_pursuit import NeuronPursuit, SaddleMonitor
from callbacks.run_callbacks import (FlushLogsOnCheckpoint, NaNGuard, NonFiniteLossError, ParameterCounts, RNGState,
                                     RunCheckpoint, RunStats, SlurmRequeue, parameter_counts)
from callbacks.resnet_width import NTKMonitor
from callbacks.gda_gan import FID, NND, SampleGrids

__all__ = ["NTKMonitor", "FlushLogsOnCheckpoint", "NaNGuard", "NeuronPursuit", "SaddleMonitor", "NonFiniteLossError", "parameter_counts",
           "ParameterCounts", "ResumableCSVLogger", "RNGState", "RunCheckpoint", "RunStats", "SlurmRequeue",
           "truncate_metrics", "FID", "NND", "SampleGrids"]
