"""Generated protobuf / gRPC code of the SensorsimService (``make protos`` regenerates it; never edit by hand)."""
