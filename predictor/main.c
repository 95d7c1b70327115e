/*
 * main.c - turnout-predictor entry point (placeholder until the server lands).
 */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "turnout-predictor: not built yet (issue: turnout-predictor)\n");
	return 1;
}
