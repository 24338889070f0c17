"""The paper's efficiency table: counting parameters and MACs (``profile``), the table of M²S²L and its peers
(``table``) and the one timer every speed figure uses (``benchmarking``)."""
