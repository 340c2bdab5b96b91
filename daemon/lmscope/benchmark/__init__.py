"""`lmscope bench`: how fast and how flat in memory a trace is, measured against the floor (a
plain forward pass) and the dense LM-TT-style reference, all in one process run so the ratios
hold on a noisy machine. Timing is reported, never asserted; the correctness check (lmscope's
contributions vs the dense reference's) is."""
