/*
 * turnoutctl.c - admin CLI (placeholder until the admin socket lands).
 */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "turnoutctl: not built yet (issue: operations)\n");
	return 1;
}
