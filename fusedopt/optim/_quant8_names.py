"""The state-dict name of an 8-bit state's block scales: state ``name`` holds the
codes and ``name + ABSMAX`` the float32 scales (README, "8-bit optimizer
states"). Its own module, so that the plain and the DTensor handling of 8-bit
states (_quant8_states.py, _quant8_dtensor.py) both take it from below."""

ABSMAX = "_absmax"
