"""Live watching: camera sources, capture threads, batched scoring, calibration, events and sinks.

Importing this package imports neither torch nor cv2; each stage imports its heavy dependency when it runs.
"""
