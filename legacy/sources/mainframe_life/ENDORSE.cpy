000100*================================================================ ENDORSE
000200* ENDORSE   POLICY ENDORSEMENTS (CONTRACT CHANGES)                ENDORSE
000300*           RECFM=FB, LRECL=80, KEY POL-NUMBER + END-SEQ          ENDORSE
000400*================================================================ ENDORSE
000500 01  ENDORSE-REC.                                                 ENDORSE
000600     05  POL-NUMBER              PIC X(10).                       ENDORSE
000700     05  END-SEQ                 PIC 9(03).                       ENDORSE
000800     05  END-DATE                PIC 9(08).                       ENDORSE
000900     05  END-CODE                PIC X(04).                       ENDORSE
001000     05  END-DESC                PIC X(40).                       ENDORSE
001100     05  END-PREM-CHANGE         PIC S9(5)V99  COMP-3.            ENDORSE
001200     05  FILLER                  PIC X(11).                       ENDORSE
