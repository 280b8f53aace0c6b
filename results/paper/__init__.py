"""The paper's Tables 1-3 (Oorloff & Yacoob, ICCV 2023) as CSV package data."""
