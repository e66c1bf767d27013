000100*================================================================ CLAIMREF
000200* CLAIMREF  CLAIM REFERENCES (CLAIMS SYSTEM CROSS-REFERENCE)      CLAIMREF
000300*           RECFM=FB, LRECL=50, KEY POL-NUMBER + CLM-NUMBER       CLAIMREF
000400*================================================================ CLAIMREF
000500 01  CLAIMREF-REC.                                                CLAIMREF
000600     05  POL-NUMBER              PIC X(10).                       CLAIMREF
000700     05  CLM-NUMBER              PIC X(12).                       CLAIMREF
000800     05  CLM-DATE                PIC 9(08).                       CLAIMREF
000900     05  CLM-TYPE                PIC X(02).                       CLAIMREF
001000     05  CLM-STATUS              PIC X(02).                       CLAIMREF
001100         88  CLM-OPEN                      VALUE 'OP'.            CLAIMREF
001200         88  CLM-CLOSED                    VALUE 'CL' 'PD' 'DN'.  CLAIMREF
001300     05  CLM-AMOUNT              PIC S9(9)V99  COMP-3.            CLAIMREF
001400     05  FILLER                  PIC X(10).                       CLAIMREF
