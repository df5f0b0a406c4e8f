# Holds one TCP connection to HOST PORT open and says what ends it:
# "held" once connected, then "ended: reset" (ECONNRESET), "ended: eof" or
# "ended: <error>".
import os, socket, sys


def say(line):
    # One write per line: the output file is shared with mirrord's
    # progress messages, and print may write a line and its newline apart
    # (seen in CI: "ended: reset" + mirrord's warning + "\n").
    os.write(1, (line + "\n").encode())


s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.settimeout(None)
say("held")
try:
    data = s.recv(1)
    say("ended: eof" if not data else "ended: data")
except ConnectionResetError:
    say("ended: reset")
except OSError as e:
    say("ended: %s" % e)
