000100*================================================================ POLTRLR
000200* POLTRLR   POLICY MASTER TRAILER: THE LAST RECORD OF POLMAST     POLTRLR
000300*           RECFM=VB, RDW + 40 BYTES: THE RECORD COUNT AND THE    POLTRLR
000400*           MODAL PREMIUM TOTAL OF THE DATA RECORDS BEFORE IT     POLTRLR
000500*================================================================ POLTRLR
000600 01  POLTRLR-REC.                                                 POLTRLR
000700     05  TRL-REC-TYPE            PIC X(08).                       POLTRLR
000800         88  TRL-TRAILER                   VALUE 'TRAILER'.       POLTRLR
000900     05  TRL-RECORD-COUNT        PIC 9(09).                       POLTRLR
001000     05  TRL-PREMIUM-TOTAL       PIC S9(15)V99 COMP-3.            POLTRLR
001100     05  FILLER                  PIC X(14).                       POLTRLR
