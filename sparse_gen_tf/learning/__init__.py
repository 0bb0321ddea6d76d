"""The learning algorithms: Langevin dynamics (Eq. 10), alternating back-propagation (§2.3),
cooperative learning with the descriptor (§2.4), and inference of z for new images."""
