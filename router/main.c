/*
 * main.c - turnout entry point (placeholder until the router core lands).
 */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "turnout: not built yet (issue: router core)\n");
	return 1;
}
