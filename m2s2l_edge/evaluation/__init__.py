"""Frame-level evaluation (docs/DESIGN.md §6): the AUC protocol (``protocol``), running a backend over test videos
(``run``), the test set and its labels (``datasets``) and what ``eval`` writes (``outputs``)."""
