/* compare.h — `clipeval compare A B`: two trace folders (golden/debug layout) tensor by tensor
 * in forward order; the first tensor out of tolerance and what follows from it. */
#ifndef CLIPEVAL_COMPARE_H
#define CLIPEVAL_COMPARE_H

/* The subcommand: argv excludes "compare". Exit status: 0 every common tensor within
 * tolerance, 1 some out of tolerance (or of incompatible shape), 2 unusable input (bad usage,
 * unreadable or malformed folder, nothing in common). */
int compare_command(int argc, char **argv);

#endif
