"""MNIST test digits rendered the way a person's images look: the renderings live in the library now
(digitrec.styles, which `digitrec calibrate` also uses); the tests take them from here."""

from digitrec.styles import PAPER_STYLES, STYLES, encode, render  # noqa: F401
