import sys

try:
    from digitrec.cli import main
except KeyboardInterrupt:  # Ctrl-C (or the page's Stop) while still starting: nothing began, nothing to save
    print("interrupted before it began", file=sys.stderr)
    sys.exit(130)

main()
