print("orch-sim: not written yet")
